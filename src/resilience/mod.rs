//! Resilience built-ins: the circuit breaker, notifications when the service
//! fails (`notify`), and fault injection (`faults`).

pub mod breaker;
pub mod faults;
pub mod notify;

pub use breaker::{Breaker, CircuitBreaker, CircuitState};
pub use faults::FaultInjection;
pub use notify::{Notifier, NotifyFormat, NotifyOnCrash};
