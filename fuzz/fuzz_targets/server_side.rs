//! Arbitrary client bytes served whole by sitio with its own HTTP/1 server
//! side (`h1::serve`, which hands what it does not serve to hyper's) and by
//! sitio with hyper's server side alone: the client must read the same bytes
//! (the `date` values and the reasons of refusals aside, and one known
//! difference: see `fuzzing::served_alike`). Inputs that name the demo
//! service's endpoints that answer differently from call to call (a
//! counter, a clock, a delay) are skipped.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sitio::fuzzing::{Protocol, classify, served_alike};

fuzz_target!(|data: &[u8]| {
    if classify(data) != Some(Protocol::Http1) {
        return;
    }
    let text = String::from_utf8_lossy(data).to_ascii_lowercase();
    if ["flaky", "slow", "demo-idp", "api/photos"].iter().any(|p| text.contains(p)) {
        return;
    }
    if let Err(diff) = served_alike(data) {
        panic!("{diff}");
    }
});
