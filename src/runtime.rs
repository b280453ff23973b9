//! The running proxy, compiled once from `Settings`: the route table with
//! each GraphQL route's analysis cache, the keys' slots, the limiters and the
//! upstream client. A reload compiles a new one (`gate`); a request holds
//! the one it started with to its end.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::config::{RouteKind, RouteSpec, Settings};
use crate::forward::{self, UpstreamClient};
use crate::graphql::AnalysisCache;
use crate::keys::{KeyError, KeySource, KeyStore, Watched};
use crate::limit::{BudgetLimitSpec, KeyLimitSpec, LimitSpecs, Limiters};
use crate::route::RouteTable;
use crate::share::Shares;

/// A route as the request path uses it.
#[derive(Debug)]
pub struct Route {
    /// What the config says of it.
    pub spec: RouteSpec,
    /// Analyses of GraphQL documents seen on it (GraphQL routes only).
    pub cache: Option<Arc<AnalysisCache>>,
}

/// One consistent view of what mmgate serves with.
#[derive(Debug)]
pub struct Runtime {
    settings: Settings,
    routes: RouteTable<Route>,
    keys: KeyStore,
    upstream: UpstreamClient,
    limiters: Limiters,
    shares: Arc<Shares>,
}

impl Runtime {
    /// Compiles `settings` with its loaded `keys`. What `previous` learnt
    /// carries over where the config did not change it: limit state (no
    /// fresh burst, cool-downs continue) and GraphQL analyses.
    pub fn new(settings: Settings, keys: KeyStore, previous: Option<&Runtime>) -> Self {
        let routes = settings.routes().map(|spec| {
            let cache = match &spec.kind {
                RouteKind::Rest => None,
                RouteKind::Graphql(rule) => Some(
                    previous
                        .and_then(|p| p.routes.iter().find(|r| r.spec.pattern == spec.pattern))
                        .filter(|old| matches!(&old.spec.kind, RouteKind::Graphql(old) if old == rule))
                        .and_then(|old| old.cache.clone())
                        .unwrap_or_default(),
                ),
            };
            Route { spec: spec.clone(), cache }
        });
        let upstream = forward::client(settings.upstream());
        let limiters = Limiters::new(&limit_specs(&settings), previous.map(|p| &p.limiters));
        // Reads in flight and cached answers stay valid across a reload
        // (they are keyed by route and key fingerprint) unless `[cache]` changed.
        let shares = previous
            .map(|p| &p.shares)
            .filter(|s| s.settings() == settings.cache())
            .map_or_else(|| Arc::new(Shares::new(settings.cache())), Arc::clone);
        Self { settings, routes, keys, upstream, limiters, shares }
    }

    /// Reads every key of `settings` and compiles them: the errors of all
    /// keys that could not be read.
    pub fn load(settings: Settings) -> Result<Self, Vec<KeyError>> {
        let keys = KeyStore::load(settings.keys().iter().map(|k| (k.name.as_str(), &k.source)), None)?;
        Ok(Self::new(settings, keys, None))
    }

    /// The validated configuration.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The routes, most specific first.
    pub fn routes(&self) -> &RouteTable<Route> {
        &self.routes
    }

    /// The keys' current values, indexed like `Settings::keys`.
    pub fn keys(&self) -> &KeyStore {
        &self.keys
    }

    /// The client for the upstream.
    pub fn upstream(&self) -> &UpstreamClient {
        &self.upstream
    }

    /// Rate limits, in-flight caps and cool-downs.
    pub fn limiters(&self) -> &Limiters {
        &self.limiters
    }

    /// Reads in flight and the answer cache.
    pub fn shares(&self) -> &Arc<Shares> {
        &self.shares
    }

    /// The name of key `id`, for logs and metrics.
    pub fn key_name(&self, id: usize) -> &str {
        self.settings.keys().get(id).map_or("?", |k| k.name.as_str())
    }

    /// What the key watcher should watch.
    pub fn watched_keys(&self) -> Watched {
        let server = self.settings.server();
        let files: BTreeSet<_> = self
            .settings
            .keys()
            .iter()
            .filter_map(|k| match &k.source {
                KeySource::File(path) => Some(path.clone()),
                KeySource::Env(_) => None,
            })
            .collect();
        Watched { poll: server.key_poll_interval, events: server.watch_key_files, files }
    }
}

/// The limiters' specification, from the clients, keys and budgets of `settings`.
fn limit_specs(settings: &Settings) -> LimitSpecs<'_> {
    LimitSpecs {
        clients: settings.clients().iter().map(|c| (&*c.name, c.limit, c.limit_mode)).collect(),
        keys: settings
            .keys()
            .iter()
            .map(|k| KeyLimitSpec {
                name: &k.name,
                limit: k.limit,
                budget: k.budget,
                max_in_flight: k.max_in_flight,
                max_wait: k.max_wait,
                mode: k.limit_mode,
            })
            .collect(),
        budgets: settings
            .budgets()
            .iter()
            .map(|b| BudgetLimitSpec { name: &b.name, limit: b.limit, max_wait: b.max_wait, mode: b.mode })
            .collect(),
        shared: settings.shared(),
        max_cooldown: settings.upstream().max_cooldown,
    }
}
