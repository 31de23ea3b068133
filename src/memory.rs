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
/// Two figures fall after load: busy connections (open and not parked),
/// which hold the big buffers, and open ones, parked included, each of
/// which still holds a few KiB (a task, its state). Watching only the busy
/// ones missed the second: 9,000 parked clients closing left RSS at its peak.
#[derive(Debug, Default)]
pub(crate) struct Trimmer {
    peak_busy: u64,
    peak_open: u64,
}

/// Fewer connections than this at the peak: nothing worth trimming.
const MIN_PEAK: u64 = 64;

impl Trimmer {
    /// Called about once a second with the busy and the open connections;
    /// true when either fell to half of its peak since the last trim (time
    /// to call [`release_free_memory`]).
    pub(crate) fn tick(&mut self, busy: u64, open: u64) -> bool {
        self.peak_busy = self.peak_busy.max(busy);
        self.peak_open = self.peak_open.max(open);
        let fell = |peak: u64, now: u64| peak >= MIN_PEAK && now <= peak / 2;
        let trim = fell(self.peak_busy, busy) || fell(self.peak_open, open);
        if trim {
            self.peak_busy = busy;
            self.peak_open = open;
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
            assert!(!t.tick(busy, busy), "not yet half of the peak: {busy}");
        }
        assert!(t.tick(90, 90), "half of 200");
        assert!(!t.tick(60, 60), "the peak starts again from 90");
        assert!(!Trimmer::default().tick(0, 0), "no load, nothing to trim");
    }

    #[test]
    fn parked_clients_leaving_trim_too() {
        let mut t = Trimmer::default();
        // A burst: busy, then parked (still open), then gone.
        assert!(!t.tick(3_000, 3_000));
        assert!(t.tick(0, 3_000), "the buffers of the parked ones are free");
        assert!(!t.tick(0, 2_000), "most still open");
        assert!(t.tick(0, 10), "the parked ones left: their tasks are free");
        assert!(!t.tick(0, 0));
    }
}
