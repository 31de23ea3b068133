//! sitio's own server side of HTTP/1 (the client connection), being built to
//! replace hyper's there as `upstream::h1` replaced hyper's client: hyper's
//! server side is now the largest part of sitio's user-space instructions
//! per request (its dispatcher, a `HeaderMap` built and encoded for each
//! head, a new 8 KiB read buffer per request). See docs/benchmarks.md.
//!
//! Built in steps, each checked against what serves clients today (hyper's
//! parser with sitio's guard behind it) before it takes over:
//!
//! - `head`: the request head, parsed by `httparse` into one buffer shared by
//!   the header values, with the framing facts the guard needs read from the
//!   raw fields (hyper drops a `Content-Length` that `Transfer-Encoding`
//!   overrides, so today a scan of the raw bytes notes it, and misses heads
//!   pipelined in the same read).
//!
//! Still to come: the request body's decoder (the chunked decoder of
//! `upstream::h1` serves both directions), the response encoder, and the
//! connection loop (keep-alive, pipelining, `100-continue`, upgrades, the
//! timeouts, parking and the lingering close that `io` now does under hyper).

// Until the connection loop reads requests with it, only the tests and the
// fuzz target (`fuzz/fuzz_targets/request_head.rs`) do.
#![cfg_attr(not(test), allow(dead_code))]

pub(crate) mod head;
#[cfg(test)]
mod tests;
