//! mmgate: a local authenticating reverse proxy for the MachineMetrics API.
//!
//! Internal tools call mmgate without any MachineMetrics secret; mmgate
//! decides who is calling, what it may do and how fast, then forwards the
//! request with the right API key. A request goes through, in order
//! (`proxy` sequences these steps; each lives in its own module):
//!
//! 1. `route`   normalise the path and choose the route (404 `no_route`)
//! 2. `client`  identify the caller by token hash, Unix uid or as anonymous (401)
//! 3. `policy`  check the route's scope against the caller's allowlist;
//!    on GraphQL routes `graphql` parses every operation first (400, 403)
//! 4. `limit`   cool-downs, in-flight caps, rate limits per client, key and
//!    budget, locally then across replicas through Redis (429)
//! 5. `forward` strip credentials and hop-by-hop headers, inject the key,
//!    stream to the upstream and back (413, 502, 504)
//! 6. `error`   the one place a refusal becomes a JSON response
//!
//! Around them: `config` (TOML + env -> validated `Settings`), `keys` (key
//! sources, fingerprints, watching key files), `state` (the snapshot every
//! request reads, reload), `access` (one request's log line and metrics,
//! written when its response ends), `metrics` (Prometheus), `logging`
//! (buffered stderr), `server` (listeners, connections, shutdown), `admin`
//! (`/healthz`, `/readyz`, `/metrics`), `check` (`mmgate check`, `token`).

pub mod access;
pub mod admin;
pub mod body;
pub mod check;
pub mod client;
pub mod commands;
pub mod config;
pub mod conn;
pub mod error;
pub mod forward;
pub mod gate;
pub mod graphql;
pub mod healthcheck;
pub mod keys;
pub mod limit;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod policy;
pub mod proxy;
pub mod route;
pub mod runtime;
pub mod server;

pub use gate::Gate;
pub use proxy::{app, App};
pub use runtime::Runtime;
