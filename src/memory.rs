//! Giving memory back after load. glibc's allocator keeps freed heap pages
//! (in every thread's arena) for reuse, so after 1,000 slow clients had come
//! and gone sitio's RSS stayed at its peak (226 MiB, measured). Trimming on
//! every free would cost the hot path; instead, once the open connections
//! (busy: open and not parked, see `io::PARK_AFTER`)
//! have fallen to half of their recent peak, the free pages are returned with
//! `malloc_trim(3)`, off the request path: the once-a-second telemetry task
//! decides, and a blocking-pool thread trims (it can take milliseconds on a
//! large heap, which must not stall a runtime thread serving traffic).
//! Measured before/after in docs/reliability.md.

/// Decides when load has dropped enough for a trim to be worth its cost.
///
/// Memory is freed in three ways after load: busy connections (open and not
/// parked, the ones holding the big buffers) fall; open ones, parked
/// included (each still a few KiB), fall; and connections park, freeing
/// their buffers while they stay open. The figures are sampled once a
/// second, so a burst that comes and parks between two samples shows no
/// busy peak at all: the third rule catches it by the parked count rising.
/// Watching busy connections alone left 3,000 parked clients at 52 MiB
/// (17 KiB each) and, once they left, RSS at its peak.
#[derive(Debug)]
pub(crate) struct Trimmer {
    peak_busy: u64,
    peak_open: u64,
    /// Parked connections at the last trim (or fewer, as they left since).
    parked_base: u64,
    /// Ticks since the last trim.
    since_trim: u32,
}

impl Default for Trimmer {
    fn default() -> Self {
        Trimmer {
            peak_busy: 0,
            peak_open: 0,
            parked_base: 0,
            since_trim: u32::MAX,
        }
    }
}

/// Fewer connections than this at the peak (or parked since the last
/// trim): nothing worth trimming.
const MIN_PEAK: u64 = 64;
/// Ticks between two trims for parked connections, which keep coming under
/// steady traffic with pauses (a trim holds the allocator's locks briefly).
const PARKED_TRIM_EVERY: u32 = 10;

impl Trimmer {
    /// Called about once a second with the busy, open and parked
    /// connections; true when it is time to call [`release_free_memory`].
    pub(crate) fn tick(&mut self, busy: u64, open: u64, parked: u64) -> bool {
        self.since_trim = self.since_trim.saturating_add(1);
        self.peak_busy = self.peak_busy.max(busy);
        self.peak_open = self.peak_open.max(open);
        self.parked_base = self.parked_base.min(parked);
        let fell = |peak: u64, now: u64| peak >= MIN_PEAK && now <= peak / 2;
        let parked_freed = parked >= self.parked_base + MIN_PEAK
            && busy < MIN_PEAK
            && self.since_trim >= PARKED_TRIM_EVERY;
        let trim = fell(self.peak_busy, busy) || fell(self.peak_open, open) || parked_freed;
        if trim {
            self.peak_busy = busy;
            self.peak_open = open;
            self.parked_base = parked;
            self.since_trim = 0;
        }
        trim
    }
}

/// Returns the allocator's free pages to the system.
#[cfg(target_env = "gnu")]
#[allow(unsafe_code)]
pub(crate) fn release_free_memory() {
    // SAFETY: malloc_trim only walks the allocator's own free lists; it takes
    // the arena locks itself and touches no memory that is in use.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Other allocators than glibc's return memory on their own terms.
#[cfg(not(target_env = "gnu"))]
pub(crate) fn release_free_memory() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_once_load_halves_and_not_before() {
        let mut t = Trimmer::default();
        for busy in [10, 200, 150, 101] {
            assert!(!t.tick(busy, busy, 0), "not yet half of the peak: {busy}");
        }
        assert!(t.tick(90, 90, 0), "half of 200");
        assert!(!t.tick(60, 60, 0), "the peak starts again from 90");
        assert!(
            !Trimmer::default().tick(0, 0, 0),
            "no load, nothing to trim"
        );
    }

    #[test]
    fn a_burst_that_parks_between_two_samples_is_trimmed_and_so_is_its_leaving() {
        let mut t = Trimmer::default();
        // The burst came and parked between two ticks: no busy peak seen.
        assert!(t.tick(0, 3_000, 3_000), "the parked ones' buffers are free");
        assert!(!t.tick(0, 3_000, 3_000), "nothing new");
        assert!(!t.tick(0, 2_000, 2_000), "most still open");
        assert!(
            t.tick(0, 10, 10),
            "the parked ones left: their tasks are free"
        );
        assert!(!t.tick(0, 0, 0));
    }

    #[test]
    fn steady_parking_trims_at_most_every_ten_seconds() {
        let mut t = Trimmer::default();
        let trims = (0..30u64)
            .filter(|i| t.tick(10, 500, 100 + (i % 2) * 100))
            .count();
        assert_eq!(trims, 3, "once at the start, then every 10 ticks at most");
    }
}
