//! Protocol detection on arbitrary first bytes: never panics, and its answer
//! never changes once given as more bytes arrive (no guessing from one read).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let full = sitio::fuzzing::classify(data);
    for cut in 0..data.len() {
        // Every answer is final, opaque ones included: how the bytes were
        // split into reads must not pick the protocol.
        if let Some(early) = sitio::fuzzing::classify(&data[..cut]) {
            assert_eq!(Some(early), full, "decided {early:?} after {cut} bytes");
        }
    }
});
