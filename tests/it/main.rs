//! Integration tests: sitio through its public `run` entry, on real sockets,
//! against real backends.

mod common;
mod container;
mod decorators;
mod deploy;
mod errors;
mod hardening;
mod lifecycle;
mod limits;
mod proxying;
mod resilience;
mod smuggling;
mod telemetry;
mod tunnels;
