//! What the environment says about the configuration: `MMGATE_<TABLE>__<KEY>`
//! overrides, and the proxy variables. Each is read once per load.

use figment::providers::Env;

use super::{ConfigError, ConfigOrigin};

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
    pub(super) fn var_under(&self, path: &[String]) -> Option<&str> {
        self.vars.iter().find(|(_, p)| p.starts_with(path)).map(|(name, _)| name.as_str())
    }

    /// Overrides that can never apply: arrays are set in the file only.
    pub(super) fn refuse_arrays(&self, origin: &ConfigOrigin) -> Result<(), ConfigError> {
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
    pub(super) fn provider(&self) -> Env {
        let keys: Vec<String> = self.vars.iter().map(|(_, path)| path.join("__")).collect();
        Env::prefixed(Self::PREFIX).filter(move |key| keys.iter().any(|k| key == k.as_str())).split("__")
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
