//! mmgate: a local authenticating reverse proxy for the MachineMetrics API.
//!
//! Internal tools call mmgate without any MachineMetrics secret; mmgate
//! decides who is calling, what it may do and how fast, then forwards the
//! request with the right API key. A request goes through, in order
//! (`proxy` sequences these steps; each lives in its own module):
//!
//! 0. `server`  hyper's HTTP/1 codec with exact head limits and timeouts
//!    (431, 408 in JSON: `server::guard`), connection caps
//! 1. `route`   normalise the path and choose the route (404 `no_route`)
//! 2. `client`  identify the caller by token hash, Unix uid or as anonymous (401)
//! 3. `policy`  check the route's scope against the caller's allowlist;
//!    on GraphQL routes `graphql` reads and analyses every operation (400, 403)
//! 4. `limit`   cool-downs, in-flight caps, rate limits per client, key and
//!    budget, locally then across replicas through Redis (429)
//! 5. `forward` strip credentials and hop-by-hop headers, inject the key,
//!    stream to the upstream (directly or through an egress proxy) and back;
//!    `body` watches the caller's body (400, 408, 413, 502, 504)
//! 6. `error`   the one place a refusal becomes a JSON response
//!
//! Dependencies point one way. Leaves know nothing of configuration loading
//! or of the running proxy: `route`, `client`, `policy`, `graphql`, `limit`,
//! `keys`, `body`, `conn`, `metrics`, `logging`, `notify`. `config` turns the
//! TOML and the environment into validated `Settings` of their types;
//! `runtime` compiles `Settings` into the running proxy (routes with their
//! GraphQL caches, key slots, limiters, the upstream client); `gate` holds
//! the current runtime and swaps it on reload; the request path (`proxy`,
//! `access`, `error`, `forward`) and the listeners (`server`, `admin`) sit
//! on top. `commands` is what the binary's subcommands do (`check`,
//! `healthcheck`, `token` each have a module).
//!
//! The public contract: `config`, `commands`, `graphql` (pure analysis, for
//! benches and property tests), and `app`, `Gate`, `Runtime`, `Server`,
//! `Peer`, `Fingerprint`.

mod access;
mod admin;
mod body;
mod check;
mod client;
pub mod commands;
pub mod config;
mod conn;
mod error;
mod forward;
mod gate;
pub mod graphql;
mod healthcheck;
mod keys;
mod limit;
mod logging;
mod metrics;
mod notify;
mod policy;
mod proxy;
mod route;
mod runtime;
mod server;
mod share;
mod suggest;
mod telemetry;

pub use client::Peer;
pub use gate::{Gate, ReloadError};
pub use keys::Fingerprint;
pub use proxy::{app, App};
pub use runtime::Runtime;
pub use server::Server;
