//! Integration tests: real HTTP over loopback, mmgate against a fake
//! MachineMetrics upstream that records what it receives. One test binary
//! with a module per behaviour area, so CI links once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin;
mod answers;
mod app;
mod cache;
mod cli;
mod config;
mod egress;
mod forwarding;
mod graphql;
mod graphql_cost;
mod graphql_props;
mod hardening;
mod identity;
mod lifecycle;
mod limits;
mod observability;
mod observe;
mod pool;
mod quota;
mod reload;
mod rotation;
mod routing;
mod shadow;
mod shared_limits;
mod suggest;
mod support;
mod telemetry;
mod tls;
mod unix;
mod waiting;
