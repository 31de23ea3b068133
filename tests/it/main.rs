//! Integration tests: sitio through its public `run` entry, on real sockets,
//! against real backends.

// Test helpers are shared between modules, not a public API.
#![allow(unreachable_pub, missing_docs, missing_debug_implementations)]

mod auth;
mod client_connection;
mod common;
mod container;
mod contract;
mod decorators;
mod deploy;
mod driver;
mod errors;
mod examples;
mod grpc;
mod h2_attacks;
mod h2_conformance;
mod hardening;
mod http2;
mod https_hooks;
mod inject;
mod injector;
mod lifecycle;
mod limits;
mod mail;
mod mothership;
mod proxying;
mod rate_limits;
mod readme;
mod request_heads;
mod resilience;
mod response_heads;
mod service_connection;
mod smuggling;
mod split;
mod telemetry;
mod tunnels;
