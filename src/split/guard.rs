//! The A/B guard (what Flagger does from outside the pod, here inside it):
//! requests and failures of each upstream over the last minute, and the
//! verdict that a variant is worse than the service.
//!
//! Each upstream counts into 60 one-second buckets of atomics. The guard is
//! opt-in (`SITIO_SPLIT_GUARD=on`); its counters are the only state the
//! split shares between cores, two relaxed increments per request.

use std::sync::atomic::{AtomicU64, Ordering};

const SECONDS: usize = 60;

/// One upstream's last minute.
pub(super) struct Window {
    /// Per bucket: the second it counts, requests, failures.
    buckets: [[AtomicU64; 3]; SECONDS],
}

impl Default for Window {
    fn default() -> Self {
        Window {
            buckets: std::array::from_fn(|_| Default::default()),
        }
    }
}

impl Window {
    /// One completed request at second `now`.
    pub(super) fn record(&self, now: u64, failed: bool) {
        let [second, requests, failures] = &self.buckets[now as usize % SECONDS];
        let seen = second.load(Ordering::Relaxed);
        if seen != now
            && second
                .compare_exchange(seen, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            // A new second for this bucket: the one who moved it clears it.
            // A racing increment may land in the old count; the guard judges
            // rates over hundreds of requests, so one is noise.
            requests.store(0, Ordering::Relaxed);
            failures.store(0, Ordering::Relaxed);
        }
        requests.fetch_add(1, Ordering::Relaxed);
        if failed {
            failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// (requests, failures) over the minute before `now`, `now` included.
    pub(super) fn totals(&self, now: u64) -> (u64, u64) {
        let mut totals = (0, 0);
        for [second, requests, failures] in &self.buckets {
            let s = second.load(Ordering::Relaxed);
            if s <= now && now - s < SECONDS as u64 {
                totals.0 += requests.load(Ordering::Relaxed);
                totals.1 += failures.load(Ordering::Relaxed);
            }
        }
        totals
    }
}

/// The guard's rule.
#[derive(Debug, Clone, Copy)]
pub(super) struct Rule {
    /// How many times the service's error rate a variant may reach.
    pub factor: f64,
    /// Requests a variant must have served before it is judged.
    pub min_requests: u64,
}

/// Failures a variant must have had before it is judged: a single error in
/// twenty requests says little.
const MIN_FAILURES: u64 = 3;

impl Rule {
    /// True when the variant's figures (requests, failures) are worse than
    /// the service's by more than the factor, with enough samples.
    pub(super) fn trips(&self, variant: (u64, u64), service: (u64, u64)) -> bool {
        let (requests, failures) = variant;
        if requests < self.min_requests || failures < MIN_FAILURES {
            return false;
        }
        let rate = failures as f64 / requests as f64;
        let service_rate = match service {
            (0, _) => 0.0,
            (n, f) => f as f64 / n as f64,
        };
        rate > self.factor * service_rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_forget_what_is_older_than_a_minute() {
        let w = Window::default();
        for _ in 0..10 {
            w.record(100, false);
        }
        w.record(100, true);
        w.record(130, true);
        assert_eq!(w.totals(130), (12, 2));
        assert_eq!(w.totals(159), (12, 2));
        assert_eq!(w.totals(160), (1, 1));
        // A bucket reused a minute later starts from zero.
        w.record(160, false);
        assert_eq!(w.totals(160), (2, 1));
    }

    #[test]
    fn the_rule_needs_samples_and_a_worse_rate() {
        let rule = Rule {
            factor: 2.0,
            min_requests: 20,
        };
        assert!(!rule.trips((10, 10), (100, 0)), "too few requests");
        assert!(!rule.trips((100, 2), (100, 0)), "too few failures");
        assert!(rule.trips((100, 10), (100, 2)));
        assert!(!rule.trips((100, 10), (100, 5)), "not twice as bad");
        assert!(rule.trips((40, 40), (0, 0)));
    }
}
