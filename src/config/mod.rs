//! Configuration: figment reads the TOML file (or the embedded default) and
//! `MMGATE_<TABLE>__<KEY>` overrides (`env`) into `RawConfig` (`raw`, the TOML
//! shape); `validate` turns it into `Settings` (`settings`, plain validated
//! data) once, reporting every mistake together, each naming the key path
//! and the fix, prefixed by the file it came from.

pub(crate) mod egress;
mod env;
mod raw;
mod settings;
mod units;
mod validate;

use std::fmt;
use std::path::{Path, PathBuf};

use figment::providers::{Format, Toml};
use figment::Figment;

pub use env::{Overrides, ProxyEnv};
pub use raw::{schema, RawConfig};
pub use settings::{
    BudgetSpec, CacheSettings, Egress, KeyId, KeySpec, ListenAddr, LogFormat, RouteKind, RouteSpec, ServerSettings,
    Settings, TelemetrySettings, UpstreamSettings,
};

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
            _ => crate::keys::unreadable(&e),
        },
    })
}

/// A key path as validation spells it: `routes[2].path`, not `routes.2.path`.
fn key_path(path: &[String]) -> String {
    let mut out = String::new();
    for part in path {
        if part.bytes().all(|b| b.is_ascii_digit()) && !out.is_empty() {
            out.push('[');
            out.push_str(part);
            out.push(']');
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(part);
        }
    }
    out
}

/// What a value should have been, in an operator's words rather than Rust's.
fn expected_in_words(expected: &str) -> String {
    match expected {
        "u8" | "u16" | "u32" | "u64" | "usize" | "i32" | "i64" => "a whole number".into(),
        "a sequence" => "a list, e.g. [\"reporting\"]".into(),
        "a map" => "a table".into(),
        other if other.starts_with("struct ") => "a table".into(),
        other => other.into(),
    }
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
        figment::error::Kind::InvalidType(actual, expected) => {
            let found = actual.to_string().replace("signed int", "number").replace("unsigned int", "number");
            format!("expected {}, found {found}", expected_in_words(expected))
        }
        kind => kind.to_string(),
    };
    if from_env {
        if let Some(var) = overrides.var_under(&e.path) {
            return format!("{var}: {what} (this variable overrides `{}`)", key_path(&e.path));
        }
    }
    let key = key_path(&e.path);
    if key.is_empty() {
        what
    } else {
        format!("{key}: {what}")
    }
}
