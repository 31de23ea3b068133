//! Resilience built-ins: the circuit breaker, and notifications when the
//! service fails (`notify`).

pub mod breaker;

pub use breaker::{Breaker, CircuitBreaker, CircuitState};
