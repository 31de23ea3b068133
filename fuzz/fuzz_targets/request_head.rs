//! Arbitrary client bytes to sitio's own request-head parser and to sitio
//! with hyper's server side (hyper's parser and the guard): every head both
//! read to a decision is forwarded by both, or
//! refused by both with the same status. Inputs that are not HTTP/1, or
//! whose head is incomplete, are left to `request_path`. One known
//! difference is allowed: where the new parser refuses a head, hyper may
//! close without a 400 (the HTTP/2 preface follows the head; see
//! `fuzzing::Outcome::Closed`), which refuses it too. Every head that can
//! go on as the client's bytes (`splice`) must reach the service as its
//! edited field map would.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sitio::fuzzing::{Outcome, Protocol, classify, head_outcomes, spliced_alike};

fuzz_target!(|data: &[u8]| {
    if classify(data) != Some(Protocol::Http1) {
        return;
    }
    // A head forwarded as the client's bytes reaches the service as its
    // edited field map would.
    if let Err(e) = spliced_alike(data) {
        panic!("{e} on {:?}", String::from_utf8_lossy(&data[..data.len().min(200)]));
    }
    if let Some((new, today)) = head_outcomes(data) {
        let refused_both = matches!((new, today), (Outcome::Refused(_), Outcome::Closed));
        assert!(
            new == today || refused_both,
            "new {new:?}, today {today:?} on {:?}",
            String::from_utf8_lossy(&data[..data.len().min(200)])
        );
    }
});
