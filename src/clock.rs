//! The one clock behind exchange timings and the built-ins' timers (breaker
//! cool-down, stale copies' age, notification intervals): Tokio's, so a test
//! can pause time and advance it (`#[tokio::test(start_paused = true)]`)
//! instead of sleeping. Outside a paused runtime it is the monotonic clock,
//! at the same cost. A leaf: it imports nothing of sitio.

use std::time::Instant;

/// Now, as Tokio's clock says (paused and advanced in tests).
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Time since `then`, on the same clock.
pub(crate) fn since(then: Instant) -> std::time::Duration {
    now().saturating_duration_since(then)
}
