//! Resilience built-ins: the circuit breaker, and notifications when the
//! service fails (`notify`).

pub mod breaker;
pub mod notify;

pub use breaker::{Breaker, CircuitBreaker, CircuitState};
pub use notify::{Notifier, NotifyFormat, NotifyOnCrash};
