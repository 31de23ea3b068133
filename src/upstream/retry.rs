//! When a failed request may be sent again, and how many times: a budget per
//! worker thread (no shared state on the request path) stops retry storms.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// Retries always allowed per window, however little traffic there is.
const MIN_PER_WINDOW: u32 = 10;
/// Beyond that, retries may add this share of the window's requests.
const RATIO: f64 = 0.2;
const WINDOW: Duration = Duration::from_secs(10);

thread_local! {
    static BUDGET: Cell<(Option<Instant>, u32, u32)> = const { Cell::new((None, 0, 0)) };
}

/// Counts a request toward this thread's budget.
pub(crate) fn note_request() {
    BUDGET.with(|b| {
        let (start, requests, retries) = b.get();
        b.set((start, requests.saturating_add(1), retries));
    });
}

/// Takes one retry from this thread's budget, if any is left.
pub(crate) fn take() -> bool {
    BUDGET.with(|b| {
        let (start, mut requests, mut retries) = b.get();
        let now = Instant::now();
        let start = match start {
            Some(s) if now.duration_since(s) < WINDOW => s,
            _ => {
                (requests, retries) = (0, 0);
                now
            }
        };
        let allowed = MIN_PER_WINDOW.max((f64::from(requests) * RATIO) as u32);
        let ok = retries < allowed;
        b.set((Some(start), requests, retries + u32::from(ok)));
        ok
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_allows_a_few_then_a_share_of_traffic() {
        std::thread::spawn(|| {
            let granted = (0..50).filter(|_| take()).count(); // opens a window
            assert_eq!(granted, MIN_PER_WINDOW as usize, "a storm is cut off");
            for _ in 0..1000 {
                note_request();
            }
            let more = (0..500).filter(|_| take()).count();
            assert_eq!(
                more,
                200 - MIN_PER_WINDOW as usize,
                "20% of 1000 requests in all"
            );
        })
        .join()
        .unwrap();
    }
}
