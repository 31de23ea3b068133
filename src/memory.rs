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
#[derive(Debug, Default)]
pub(crate) struct Trimmer {
    peak_open: u64,
}

/// Fewer open connections than this at the peak: nothing worth trimming.
const MIN_PEAK: u64 = 64;

impl Trimmer {
    /// Called about once a second with the open connections; true when
    /// they fell to half of the peak seen since the last trim (time to call
    /// [`release_free_memory`]).
    pub(crate) fn tick(&mut self, open: u64) -> bool {
        self.peak_open = self.peak_open.max(open);
        let trim = self.peak_open >= MIN_PEAK && open <= self.peak_open / 2;
        if trim {
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
        for open in [10, 200, 150, 101] {
            assert!(!t.tick(open), "not yet half of the peak: {open}");
        }
        assert!(t.tick(90), "half of 200");
        assert!(!t.tick(60), "the peak starts again from 90");
        assert!(!Trimmer::default().tick(0), "no load, nothing to trim");
    }
}
