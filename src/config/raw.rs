//! The TOML shape of the configuration, exactly as an operator writes it.
//!
//! Nothing here is used by request code: `Settings::try_from` in `mod.rs`
//! turns a `RawConfig` into validated runtime types once. Defaults live here,
//! next to the field they belong to, and are documented in
//! `config/mmgate.toml`.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// The whole configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub server: RawServer,
    pub upstream: RawUpstream,
    pub keys: BTreeMap<String, RawKey>,
    pub budgets: BTreeMap<String, RawBudget>,
    pub routes: Vec<RawRoute>,
    pub clients: BTreeMap<String, RawClient>,
    pub limits: RawLimits,
}

/// `[limits]`: the optional limiter shared by replicas through Redis.
#[derive(Debug, Deserialize)]
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
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    /// Default `127.0.0.1:8080`; `unix:/path` for a Unix socket.
    pub listen: String,
    /// Default `127.0.0.1:9090`.
    pub admin_listen: String,
    /// Default 1 MiB.
    pub max_body: ByteSize,
    /// Default 32 KiB.
    pub max_header_bytes: ByteSize,
    /// Default 25 s.
    pub shutdown_grace: HumanDuration,
    /// Default 5 s: fallback re-read of key files when no change event arrives.
    pub key_poll_interval: HumanDuration,
    /// Default true: re-read key files as soon as their directory changes.
    pub watch_key_files: bool,
    /// `text` (default) or `json`: one JSON object per log line.
    pub log_format: String,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            admin_listen: "127.0.0.1:9090".into(),
            max_body: ByteSize(1024 * 1024),
            max_header_bytes: ByteSize(32 * 1024),
            shutdown_grace: HumanDuration(Duration::from_secs(25)),
            key_poll_interval: HumanDuration(Duration::from_secs(5)),
            watch_key_files: true,
            log_format: "text".into(),
        }
    }
}

/// `[upstream]`: the MachineMetrics API host and how long to wait for it.
#[derive(Debug, Deserialize)]
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
}

impl Default for RawUpstream {
    fn default() -> Self {
        Self {
            url: "https://api.machinemetrics.com".into(),
            connect_timeout: HumanDuration(Duration::from_secs(5)),
            timeout: HumanDuration(Duration::from_secs(30)),
            body_idle_timeout: HumanDuration(Duration::from_secs(30)),
            max_cooldown: HumanDuration(Duration::from_secs(60)),
        }
    }
}

/// `[keys.NAME]`: one MachineMetrics API key and where to read it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKey {
    pub env: Option<String>,
    pub file: Option<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    pub limit: Option<RawLimit>,
    pub budget: Option<String>,
    /// Most requests in flight upstream at once on this key; more are refused.
    pub max_in_flight: Option<u32>,
}

/// `[budgets.NAME]`: a limit shared by every key naming it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBudget {
    pub limit: RawLimit,
}

/// `limit = { per_second = N, burst = M }` or `per_minute`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimit {
    pub per_second: Option<u32>,
    pub per_minute: Option<u32>,
    pub burst: Option<u32>,
}

/// `[[routes]]`: a path pattern, the key it uses and the scope it needs.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub path: String,
    pub key: String,
    pub scope: String,
    /// `rest` (default) or `graphql`.
    pub kind: Option<String>,
    pub mutation_scope: Option<String>,
    /// GraphQL shape limits; defaults in `graphql::Limits::default`.
    pub max_depth: Option<u32>,
    pub max_aliases: Option<u32>,
    pub max_root_fields: Option<u32>,
    pub max_tokens: Option<u32>,
    pub introspection: Option<bool>,
}

/// `[clients.NAME]`: one caller, by token hash or as the anonymous client.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClient {
    pub token_sha256: Option<String>,
    #[serde(default)]
    pub anonymous: bool,
    /// Identify callers on a Unix socket listener by their user id.
    pub unix_uid: Option<u32>,
    #[serde(default)]
    pub scopes: Vec<String>,
    pub limit: Option<RawLimit>,
    /// GraphQL root fields this client may select (all when absent).
    pub graphql_fields: Option<Vec<String>>,
}

/// A duration written as `"25s"`, `"1m 30s"`, `"250ms"`, or whole seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration such as \"30s\", \"250ms\" or \"2m\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(HumanDuration(Duration::from_secs(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                u64::try_from(v)
                    .map(|s| HumanDuration(Duration::from_secs(s)))
                    .map_err(|_| E::custom("a duration cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                humantime::parse_duration(v.trim())
                    .map(HumanDuration)
                    .map_err(|e| E::custom(format!("`{v}` is not a duration ({e}); write e.g. \"30s\"")))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// A size written as `"1MiB"`, `"32KiB"`, `"500kB"`, or a number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size such as \"1MiB\" or \"32KiB\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                u64::try_from(v).map(ByteSize).map_err(|_| E::custom("a size cannot be negative"))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                v.trim()
                    .parse::<bytesize::ByteSize>()
                    .map(|b| ByteSize(b.as_u64()))
                    .map_err(|e| E::custom(format!("`{v}` is not a size ({e}); write e.g. \"1MiB\"")))
            }
        }
        deserializer.deserialize_any(V)
    }
}
