//! Resilience built-ins: the circuit breaker, notifications when the service
//! fails (`notify`), fault injection (`faults`), and stale copies served
//! instead of errors (`stale`).

pub mod breaker;
pub mod faults;
pub mod notify;
pub mod rate_limit;
pub mod stale;

pub use breaker::{Breaker, CircuitBreaker, CircuitState};
pub use faults::FaultInjection;
pub use notify::{Notifier, NotifyFormat, NotifyOnCrash};
pub use rate_limit::{RateLimit, RateLimiter};
pub use stale::{StaleCache, StaleOnError};
