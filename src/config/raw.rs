//! The TOML shape of the configuration, exactly as an operator writes it.
//!
//! Nothing here is used by request code: `Settings::try_from` in `mod.rs`
//! turns a `RawConfig` into validated runtime types once. Defaults live here,
//! next to the field they belong to, and are documented in
//! `config/mmgate.toml`.

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::{JsonSchema, Schema};
use serde::Deserialize;

pub use super::units::{ByteSize, HumanDuration};

/// mmgate configuration (mmgate.toml).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
#[schemars(title = "mmgate configuration")]
pub struct RawConfig {
    /// Where mmgate listens and what it accepts.
    pub server: RawServer,
    /// The MachineMetrics API host.
    pub upstream: RawUpstream,
    /// Named MachineMetrics API keys, one per purpose.
    pub keys: BTreeMap<String, RawKey>,
    /// Limits shared by several keys (e.g. one company's GraphQL budget).
    pub budgets: BTreeMap<String, RawBudget>,
    /// Path patterns, the key each injects and the scope each needs.
    pub routes: Vec<RawRoute>,
    /// Callers: by token hash, as the anonymous client, or by Unix uid.
    pub clients: BTreeMap<String, RawClient>,
    /// The optional limiter shared by replicas through Redis.
    pub limits: RawLimits,
    /// Answers kept for routes with `cache`, and shared between callers.
    pub cache: RawCacheSettings,
    /// OpenTelemetry traces, off unless `otlp_endpoint` is set.
    pub telemetry: RawTelemetry,
}

/// `[telemetry]`: OpenTelemetry traces over OTLP/HTTP (protobuf).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawTelemetry {
    /// The collector, e.g. "http://localhost:4318" (its /v1/traces); absent = no traces.
    pub otlp_endpoint: Option<String>,
    /// Default false: continue a caller's `traceparent` (else every request starts a trace).
    pub trust_incoming: bool,
    /// Default 1.0: the share of traces kept (0.01 = 1 %); a continued trace follows its caller's choice.
    pub sampling_ratio: f64,
    /// Default 2048: finished spans waiting for export; beyond, new ones are dropped (and counted).
    pub max_queued_spans: u32,
    /// Default 5 s: longest export call to the collector.
    pub export_timeout: HumanDuration,
    /// Default "mmgate": the `service.name` of the spans.
    pub service_name: String,
}

impl Default for RawTelemetry {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            trust_incoming: false,
            sampling_ratio: 1.0,
            max_queued_spans: 2048,
            export_timeout: HumanDuration(Duration::from_secs(5)),
            service_name: "mmgate".into(),
        }
    }
}

/// `[cache]`: the memory answers kept and shared may use.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawCacheSettings {
    /// Default 64 MiB: every cached answer together (least recently used out first).
    pub max_bytes: ByteSize,
    /// Default 1 MiB: larger answers are neither cached nor shared between callers.
    pub max_entry_bytes: ByteSize,
}

impl Default for RawCacheSettings {
    fn default() -> Self {
        Self { max_bytes: ByteSize(64 * 1024 * 1024), max_entry_bytes: ByteSize(1024 * 1024) }
    }
}

/// `[limits]`: the optional limiter shared by replicas through Redis.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawLimits {
    /// `redis://host:port`; absent = limits are per replica.
    pub redis: Option<String>,
    /// Default true: while Redis is unreachable, apply local limits only.
    pub fail_open: bool,
    /// Default 100 ms: longest wait for Redis on a request.
    pub redis_timeout: HumanDuration,
    /// Default "mmgate": prefix of the Redis keys.
    pub redis_prefix: String,
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            redis: None,
            fail_open: true,
            redis_timeout: HumanDuration(Duration::from_millis(100)),
            redis_prefix: "mmgate".into(),
        }
    }
}

/// `[server]`: where mmgate listens and what it accepts.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    /// Default `127.0.0.1:8080`; `unix:/path` for a Unix socket.
    pub listen: String,
    /// Default `127.0.0.1:9090`.
    pub admin_listen: String,
    /// Default 1 MiB.
    pub max_body: ByteSize,
    /// Default 32 KiB: request line and headers; 431 above it.
    pub max_header_bytes: ByteSize,
    /// Default 200: header count; 431 above it.
    pub max_headers: u32,
    /// Default 10000: further connections wait in the backlog.
    pub max_connections: u32,
    /// Default 10 s: a request head not complete by then gets 408.
    pub header_timeout: HumanDuration,
    /// Default 60 s: keep-alive connections idle longer are closed.
    pub idle_timeout: HumanDuration,
    /// Default 30 s: a caller's body that stalls longer gets 408.
    pub body_idle_timeout: HumanDuration,
    /// Default 25 s.
    pub shutdown_grace: HumanDuration,
    /// Default false: true makes /readyz 503 while a key is rejected or stale.
    pub unready_on_rejected_key: bool,
    /// Default 5 s: fallback re-read of key files when no change event arrives.
    pub key_poll_interval: HumanDuration,
    /// Default true: re-read key files as soon as their directory changes.
    pub watch_key_files: bool,
    /// `text` (default) or `json`: one JSON object per log line.
    pub log_format: RawLogFormat,
    /// `enforce` (default) or `shadow`: every policy without a mode of its own
    /// records what it would refuse and forwards the request.
    pub mode: RawMode,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            admin_listen: "127.0.0.1:9090".into(),
            max_body: ByteSize(1024 * 1024),
            max_header_bytes: ByteSize(32 * 1024),
            max_headers: 200,
            max_connections: 10_000,
            header_timeout: HumanDuration(Duration::from_secs(10)),
            idle_timeout: HumanDuration(Duration::from_secs(60)),
            body_idle_timeout: HumanDuration(Duration::from_secs(30)),
            shutdown_grace: HumanDuration(Duration::from_secs(25)),
            unready_on_rejected_key: false,
            key_poll_interval: HumanDuration(Duration::from_secs(5)),
            watch_key_files: true,
            log_format: RawLogFormat::Text,
            mode: RawMode::Enforce,
        }
    }
}

/// `server.log_format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RawLogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `mode` of a policy: enforce it, or only record what it would refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RawMode {
    /// Refuse what the policy refuses.
    #[default]
    Enforce,
    /// Forward, and record what it would have refused (`would_refuse`).
    Shadow,
}

impl From<RawMode> for crate::policy::Mode {
    fn from(mode: RawMode) -> Self {
        match mode {
            RawMode::Enforce => Self::Enforce,
            RawMode::Shadow => Self::Shadow,
        }
    }
}

/// `routes[].kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RawRouteKind {
    /// Forwarded as is; only the route's scope is checked.
    Rest,
    /// Every GraphQL operation is parsed and checked.
    Graphql,
}

/// `[upstream]`: the MachineMetrics API host and how long to wait for it.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawUpstream {
    /// Default `https://api.machinemetrics.com`.
    pub url: String,
    /// Default 5 s.
    pub connect_timeout: HumanDuration,
    /// Wait for response headers; default 30 s.
    pub timeout: HumanDuration,
    /// Longest pause inside a response body; default 30 s.
    pub body_idle_timeout: HumanDuration,
    /// Cap on an upstream 429's Retry-After; default 60 s.
    pub max_cooldown: HumanDuration,
    /// Connections open to the upstream at most; beyond, requests wait for one (default 256).
    pub max_connections: u32,
    /// PEM file of extra certificate authorities to trust beside the built-in
    /// (webpki) roots: a TLS-inspecting proxy's CA, or a test upstream's.
    pub ca_file: Option<String>,
    /// Default true: offer HTTP/2 (ALPN) on https; false = HTTP/1.1 only.
    pub http2: bool,
    /// Egress proxy `http://[user:password@]host:port`, or "none" for direct; default: HTTPS_PROXY / HTTP_PROXY / NO_PROXY.
    pub proxy: Option<String>,
}

impl Default for RawUpstream {
    fn default() -> Self {
        Self {
            url: "https://api.machinemetrics.com".into(),
            connect_timeout: HumanDuration(Duration::from_secs(5)),
            timeout: HumanDuration(Duration::from_secs(30)),
            body_idle_timeout: HumanDuration(Duration::from_secs(30)),
            max_cooldown: HumanDuration(Duration::from_secs(60)),
            max_connections: 256,
            ca_file: None,
            http2: true,
            proxy: None,
        }
    }
}

/// `[keys.NAME]`: one MachineMetrics API key and where to read it.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawKey {
    /// Environment variable holding the key (not starting with MMGATE_); exactly one of env / file.
    pub env: Option<String>,
    /// File holding the key, re-read when it changes; exactly one of env / file.
    pub file: Option<String>,
    /// Scopes granted to this key upstream.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Limit shared by every client using this key.
    pub limit: Option<RawLimit>,
    /// Name of a [budgets.NAME] this key shares.
    pub budget: Option<String>,
    /// Most requests in flight upstream at once on this key; more are refused.
    pub max_in_flight: Option<u32>,
}

/// `[budgets.NAME]`: a limit shared by every key naming it.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawBudget {
    /// The limit shared by every key naming this budget.
    pub limit: RawLimit,
}

/// `limit = { per_second = N, burst = M }` or `per_minute`.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawLimit {
    /// Sustained requests per second (exactly one of per_second / per_minute).
    pub per_second: Option<u32>,
    /// Sustained requests per minute (exactly one of per_second / per_minute).
    pub per_minute: Option<u32>,
    /// Requests allowed back to back; default: the per-period count.
    pub burst: Option<u32>,
    /// Keys and budgets: wait up to this long for a turn instead of 429.
    pub max_wait: Option<HumanDuration>,
    /// `shadow`: record what this limit would refuse, and forward.
    pub mode: Option<RawMode>,
}

/// `[[routes]]`: a path pattern, the key it uses and the scope it needs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// Exact normalised path ("/graphql") or a prefix ending in "/*" ("/reports/*").
    pub path: String,
    /// The key injected for this route.
    pub key: String,
    /// The scope a caller needs (for GraphQL: to run queries).
    pub scope: String,
    /// "rest" (default) or "graphql" (parse and check each operation).
    pub kind: Option<RawRouteKind>,
    /// GraphQL: the scope mutations need; absent = mutations denied.
    pub mutation_scope: Option<String>,
    /// GraphQL: the running operation's depth, as MachineMetrics counts it (default 5).
    pub max_depth: Option<u32>,
    /// GraphQL: the running operation's nodes, as MachineMetrics counts them (default 5).
    pub max_nodes: Option<u32>,
    /// GraphQL: most aliases in a document (default 30).
    pub max_aliases: Option<u32>,
    /// GraphQL: most root fields per operation (default 20).
    pub max_root_fields: Option<u32>,
    /// GraphQL: most lexical tokens in a document (default 15000).
    pub max_tokens: Option<u32>,
    /// GraphQL: false refuses __schema / __type (default true).
    pub introspection: Option<bool>,
    /// REST: true when POSTs here are reads (they may be shared and cached).
    pub read_only: Option<bool>,
    /// Keep successful read answers for `ttl`: `cache = { ttl = "10s" }`.
    pub cache: Option<RawRouteCache>,
    /// `shadow`: record what this route's scope checks would refuse, and forward.
    pub mode: Option<RawMode>,
}

/// `routes[].cache`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRouteCache {
    /// How long an answer is kept, e.g. "10s".
    pub ttl: HumanDuration,
}

/// `[clients.NAME]`: one caller, by token hash or as the anonymous client.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawClient {
    /// SHA-256 (64 hex) of the client's token; `mmgate token NAME` prints one.
    pub token_sha256: Option<String>,
    /// The client of requests with no Authorization header.
    #[serde(default)]
    pub anonymous: bool,
    /// Identify callers on a Unix socket listener by their user id.
    pub unix_uid: Option<u32>,
    /// Scopes this client may use.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// The client's own limit.
    pub limit: Option<RawLimit>,
    /// GraphQL root fields this client may select (all when absent).
    pub graphql_fields: Option<Vec<String>>,
    /// Anonymous client: networks (CIDR) whose peers may use it besides loopback and Unix sockets.
    #[serde(default)]
    pub anonymous_from: Vec<String>,
    /// `shadow`: record what this client's scopes and limit would refuse, and forward.
    pub mode: Option<RawMode>,
}

/// The JSON Schema of the configuration file, for editors.
pub fn schema() -> Schema {
    schemars::schema_for!(RawConfig)
}
