//! Arbitrary client bytes through the whole request path (detection, parser,
//! guard, decorators, proxy to a loopback service). sitio must never panic, and
//! whatever it sends back must start like an HTTP/1 response (or be nothing, or
//! be the tunnelled service's bytes when the input is not HTTP).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let out = sitio::fuzzing::serve_bytes(data);
    if sitio::fuzzing::classify(data) == Some(sitio::fuzzing::Protocol::Http1) && !out.is_empty() {
        assert!(out.starts_with(b"HTTP/1."), "not an HTTP response: {:?}", String::from_utf8_lossy(&out[..out.len().min(64)]));
    }
});
